import sys

from bench_suite.frontends.cli import main

sys.exit(main())
