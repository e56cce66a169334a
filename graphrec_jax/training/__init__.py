"""Training: the pure compiled step (`step`), batches and their sources (`batches`, `sampled`,
`producer`), text-tower fine-tuning (`finetuning`), building a run from a config (`run`), the
loop and its hooks (`loop`, `hooks`), and a job in a workdir (`workdir.train_and_evaluate`).

Submodules load on first use; `import graphrec_jax.training` stays light.
"""
