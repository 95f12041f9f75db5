# A plain Keras CNN for cats vs dogs, the way it is run by hand: `python train.py`.
# Nothing in it is written for autotune; the pipeline finds it, tunes it and mails the diff.
import keras
from keras import layers

IMAGE_SIZE = (64, 64)

# Images in class sub-folders (cat/, dog/); 20 % held out for validation.
train_ds, val_ds = keras.utils.image_dataset_from_directory(
    "../../data/catsdogs",
    validation_split=0.2,
    subset="both",
    seed=1,
    image_size=IMAGE_SIZE,
    batch_size=64,
)

model = keras.Sequential()
model.add(keras.Input(shape=IMAGE_SIZE + (3,)))
model.add(layers.Rescaling(1.0 / 255))  # pixels arrive as 0..255

# Block 1: Conv + ReLU + Pool
model.add(layers.Conv2D(8, (3, 3)))
model.add(layers.Activation("relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))

# Block 2: Conv + ReLU + Pool
model.add(layers.Conv2D(8, (3, 3)))
model.add(layers.Activation("relu"))
model.add(layers.MaxPooling2D(pool_size=(2, 2)))

model.add(layers.Flatten())
model.add(layers.Dense(16, activation="relu"))
model.add(layers.Dense(1, activation="sigmoid"))  # cat or dog

model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
history = model.fit(train_ds, validation_data=val_ds, epochs=1)

print("validation accuracy:", history.history["val_accuracy"][-1])
model.save("catsdogs.keras")
