"""nbval validates the cheap notebooks at the profile they are committed at (quick); the study
notebooks are checked at smoke against a reference instead (stabnb/reproduce/reference.py)."""

from stabnb.reproduce.reference import STUDY_NOTEBOOKS

collect_ignore = [key for key in STUDY_NOTEBOOKS]
