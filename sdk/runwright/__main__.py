import sys

from runwright.cli import main

sys.exit(main())
