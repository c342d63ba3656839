
'
{"a":1,"eventName":"x"}prop
kv