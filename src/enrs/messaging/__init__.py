"""MSSanté secure messaging: the operator's side of the national trust space.

For now :mod:`enrs.messaging.trustlist` reads and verifies the national list of authorised
domains ("liste blanche"); the mail flow, mailboxes and the IHE_XDM handling come later.
"""
