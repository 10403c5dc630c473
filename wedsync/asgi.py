"""The ASGI entry point daphne serves: HTTP through Django, WebSockets through the realtime app."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wedsync.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing anything that uses models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.daphne import patches as daphne_patches  # noqa: E402
from realtime.node.hub import node_hub  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

# Protocol close codes, frame limits, write back-pressure, drain on SIGTERM; and the node's hub
# starts with the server, so /readyz tells the load balancer when it can take sockets.
daphne_patches.install(on_running=node_hub)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
