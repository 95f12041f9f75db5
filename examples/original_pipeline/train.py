# Cats vs dogs, the way the original pipeline's developer wrote it and ran it by hand:
# a module-level Sequential, two Conv+ReLU+Pool blocks of 8 filters, 64x64 RGB, one sigmoid unit,
# Kaggle-style folders. (The folders are built from the sample data by make_layout.py.)
import keras
from keras import layers

training_set = keras.utils.image_dataset_from_directory(
    "cnn_dataset/training_set/", image_size=(64, 64), batch_size=64, label_mode="binary", seed=1)
test_set = keras.utils.image_dataset_from_directory(
    "cnn_dataset/test_set/", image_size=(64, 64), batch_size=64, label_mode="binary", shuffle=False)

model = keras.Sequential()
model.add(keras.Input(shape=(64, 64, 3)))
model.add(layers.Rescaling(1.0 / 255))

model.add(layers.Conv2D(8, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))

model.add(layers.Conv2D(8, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))

model.add(layers.Flatten())
model.add(layers.Dense(units=16, activation="relu"))
model.add(layers.Dense(units=1, activation="sigmoid"))

model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(training_set, validation_data=test_set, epochs=1)

loss, accuracy = model.evaluate(test_set)
print(f"accuracy: {accuracy:.4f}")
model.save("model.h5")
