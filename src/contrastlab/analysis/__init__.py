"""Analyses over trained models and their predictions: landscape, sharpness, InPCA, progress, attacks."""
