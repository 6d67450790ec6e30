from keras_effnet.cli.scaling_curves import run
run()
