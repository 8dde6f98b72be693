"""Full fine-tuning: the run (splits, scoring, CV), the model and its stored form, the loop."""
