import sys

from lateint_jax.cli import main

sys.exit(main())
