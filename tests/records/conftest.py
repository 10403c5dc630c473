from tests.realtime.conftest import sockets as sockets  # the real ASGI application's sockets
