import sys

from guidekit.cli import main

sys.exit(main())
