"""``torchrun --nproc_per_node=P -m varbayes.mixture DATA.npy -k K``: a mixture fitted on
rows sharded over P processes (see :mod:`varbayes.mixture.distributed`)."""

import sys

from varbayes.mixture.distributed import main

if __name__ == "__main__":
    sys.exit(main())
