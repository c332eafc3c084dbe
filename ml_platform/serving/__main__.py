"""``python -m ml_platform.serving --config PATH``: run the endpoint (``server.main``)."""

import sys

from ml_platform.serving.server import main

sys.exit(main())
