
{"a":[1,2]}prop
kv
{badprop
kv