import sys

from charframe.cli import main

sys.exit(main())
