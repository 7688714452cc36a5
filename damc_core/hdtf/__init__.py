"""HDTF dataset preparation: official metadata, cutting and cropping, filtering into a clip set."""
