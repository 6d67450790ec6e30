from keras_effnet.cli.bench_input import run
run()
