import sys

from fmdconv.cli import main

sys.exit(main())
