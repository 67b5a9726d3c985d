"""Train from a config file: `python train.py --config configs/<name>.py [key=value ...]`.

Thin on purpose: parse flags, then lateint_jax.training.loop.run(config).
"""

import sys

from lateint_jax.commands.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
