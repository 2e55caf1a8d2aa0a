"""EEG: PhysioNet-MI and FACED readers, the CBraMod teacher, the MiC student, the demo and CLI commands."""
