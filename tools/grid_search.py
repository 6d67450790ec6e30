from keras_effnet.cli.grid_search import run
run()
