"""The demo's content: checkable instruction tasks, the same data in every format, the tiny tokenizer.

None of posttrain's code depends on it; the shipped configs point at it (`demo.tasks.check`,
`demo/tiny_tokenizer`, the files in data/).
"""
