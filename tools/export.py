from keras_effnet.cli.export import run
run()
