"""What the stage scripts share: spec and manifest, models, data, training tail, distribution,
signals, sampling and scoring. Imported only by stage processes (heavy imports inside functions)."""
