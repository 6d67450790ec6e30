from keras_effnet.cli.predict import run
run()
