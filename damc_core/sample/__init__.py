"""The embedded sample: a synthetic speaking subject and clips, generated deterministically with exact ground truth."""
