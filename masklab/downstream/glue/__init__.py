"""GLUE fine-tuning and evaluation (`masklab glue`) and zero-shot minimal pairs (`masklab
minimal-pairs`): task formats (tasks.py, data.py), metrics, the recipe, the cell runner (run.py),
the summary (report.py), the Slurm executor (slurm.py). Fine-tuning itself is
`masklab.downstream.finetuning.engine`."""
