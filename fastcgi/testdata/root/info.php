<?php echo "info ", $_SERVER["PATH_INFO"] ?? "", " ", $_SERVER["SCRIPT_NAME"];
