"""The MSSanté messaging service: ENRS as an MSSanté operator. Mail is carried by Postfix and
Dovecot; ENRS owns the mailboxes, the trust space and the rules, and plugs into the servers
through their documented interfaces (generated maps, policy delegation)."""
