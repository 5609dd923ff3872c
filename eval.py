"""Test a saved target model again: python eval.py ckpt_path=<run>/checkpoints/target/best.ckpt
(options: see xfer/evaluation.py or README.md)."""
from xfer.evaluation import main

if __name__ == "__main__":
    main()
