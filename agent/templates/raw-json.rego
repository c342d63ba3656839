# The event itself as pretty JSON (Postee's postee.rawmessage.json).
package hooker.rawmessage.json

import rego.v1

title := "Raw Message Received"

result := jsonformat(input_without_meta)

input_without_meta := object.remove(input, ["postee", "hooker"])
