"""``torchrun --nproc_per_node=P -m varbayes.mixture DATA.npy -k K ...``: a mixture fitted on
rows sharded over P processes; the same as ``varbayes gmm fit DATA.npy -k K --distributed``
(see :mod:`varbayes.mixture.distributed`)."""

import sys

from varbayes.cli import main

if __name__ == "__main__":
    sys.exit(main(["gmm", "fit", "--distributed", *sys.argv[1:]]))
