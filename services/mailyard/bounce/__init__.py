"""bounce — delivery status notifications, and mail that comes back to us.

Job: turn the events that call for a DSN (queue ``<prefix>.bounce``:
``failed``, ``expired``, ``suppressed``, ``delayed``, ``relayed``) into RFC
3464 DSNs to the envelope sender, as the sender asked at MAIL and RCPT (RFC
3461: NOTIFY, RET, ENVID, ORCPT), one per message and action however many
destination jobs reported (``window.py``; a suppressed recipient is a
failed one, 5.7.1, in the same DSN as the message's other failures), queued
through the pipeline with the null sender; never one to the null sender.
Owns the suppression list's automatic entries: hard bounces of the classes
that mean the address is gone, expiry strikes, complaints (``suppress.py``),
appended to ``<prefix>.suppression`` before the event waits in the window
(so once per event, whatever becomes of its DSN), and the list's periodic
snapshot. Mail for ``ingress.local_domains`` arrives on ``<prefix>.local``
and is never relayed: asynchronous bounces to our VERP return paths and ARF
complaints become ``bounced`` and ``complained`` events (``inbound.py``),
and entries on the list; the rest is counted and logged.

Security: talks only to the broker; its DSNs leave through delivery.

Standards: RFC 3461 (DSN requests), RFC 3464 (delivery status
notifications), RFC 3462 (multipart/report), RFC 3463 (status codes),
RFC 3834 (Auto-Submitted), RFC 5965 (ARF complaints).

Metrics: ``mailyard_bounce_*`` — DSNs by action, recipients reported,
events per DSN and waiting in the window, DSNs skipped and why, local
messages, asynchronous reports and complaints, suppressions added by source
and class, expiry strikes.

Configuration: ``bounce.*`` (``dsn_window``, ``prefetch``,
``max_quoted_headers``, ``max_quoted_message``, ``return_path_domain``,
``verp_secret_file``, ``classification``), ``suppression.*``, ``hostname``
(Reporting-MTA), ``broker.*``.
"""
