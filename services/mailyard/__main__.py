import sys

from mailyard.cli import main

sys.exit(main())
