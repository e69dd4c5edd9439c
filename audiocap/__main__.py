import sys

from audiocap.cli import main

sys.exit(main())
