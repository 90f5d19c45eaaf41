"""Training: the one fine-tune loop, the one supervised fit loop, and the trainers that plug into them."""
