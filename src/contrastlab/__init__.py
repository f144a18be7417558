"""contrastlab: what does contrastive pretraining do to a representation, compared with supervised pretraining?"""

__version__ = "0.1.0"
