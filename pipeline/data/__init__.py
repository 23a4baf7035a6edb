"""The labelled photos (pipeline.data.datasets) and the splits training chooses on (pipeline.data.selection_split)."""
