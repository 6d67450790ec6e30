from keras_effnet.cli.profile_tf import run
run()
