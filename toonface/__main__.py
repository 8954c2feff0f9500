import sys

from toonface.cli import main

sys.exit(main())
