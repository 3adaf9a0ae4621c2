"""Outbound notifications: a durable queue per destination, fed from the event outbox.

- :mod:`.models`: destinations (where to send, how, and a service's selector), the messages
  queued for each, and the outbox cursor of the fan-out.
- :mod:`.queue`: the fan-out (committed events → messages, in one transaction with the
  cursor: each event is rendered once) and the delivery of one destination's queue (in
  order, head of line: a message is sent only when every earlier one was delivered or
  refused; transport failures retried with back-off; every outcome audited).
- :mod:`.transports`: MLLP (HL7 v2, the ACK decides) and HTTP POST (FHIR rest-hook).
- :mod:`.dispatcher`: the loop that ``enrs serve`` runs: fan-out, and one thread per
  destination so that a destination that is down holds back no other.

What to send for an event is the service's business: a :class:`~.queue.Renderer`.
"""
