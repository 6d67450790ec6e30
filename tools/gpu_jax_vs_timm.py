from keras_effnet.cli.gpu_jax_vs_timm import run
run()
