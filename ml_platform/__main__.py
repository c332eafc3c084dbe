import sys

from ml_platform.cli.main import main

sys.exit(main())
