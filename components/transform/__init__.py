"""Transform run by this project's executor, handing on the data facts."""
