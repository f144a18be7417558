"""The report's sections, one module each; build.py puts them in page order."""
