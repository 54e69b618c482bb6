"""``python -m condseg.data.shapes --split train --num 3000 [--root DIR] [--preview PNG]``."""
from condseg.data.shapes.cli import main

if __name__ == "__main__":  # not again in a spawned pool worker, which imports this as __mp_main__
    main()
