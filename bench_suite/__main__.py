import sys

from bench_suite.cli import main

sys.exit(main())
