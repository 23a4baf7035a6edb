"""What writes model_label/: the export and its CPU runtimes, the int8 detector, the catalog rule chosen on the
leave-classes-out evaluation, the classifier's gallery; and the catalog's command line, which re-embeds a catalog
for a new classifier."""
