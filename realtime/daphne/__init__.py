"""What daphne needs to speak PROTOCOL.md exactly (docs/decisions/0003-daphne-integration.md), by job:
``transport`` (one socket's writes and state, seen from its ASGI ``send``), ``inbox`` (one socket's
bounded input queue), ``memory`` (what an open socket and the process keep) and ``patches`` (every
change to daphne, autobahn and Twisted, applied by one ``install()``)."""
