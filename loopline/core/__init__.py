"""Floor 0: typed settings, the root error, processes, images and the file names every floor shares."""
