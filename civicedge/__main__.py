import sys

from civicedge.cli import main

sys.exit(main())
