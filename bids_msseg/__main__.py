"""``python -m bids_msseg``: the same as the ``bids_msseg`` console script."""

import sys

from bids_msseg.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
