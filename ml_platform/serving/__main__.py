import sys

from ml_platform.serving.server import main

sys.exit(main())
