_blobctl_completion() {
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _BLOBCTL_LINE="${COMP_LINE:0:COMP_POINT}" \
                   _BLOBCTL_WORDBREAKS="$COMP_WORDBREAKS" \
                   _BLOBCTL_COMPLETE=complete_bash $1 ) )
    # exit status 0 with no candidates: nothing fits here, not even a file name
    if [[ $? == 0 && ${#COMPREPLY[@]} == 0 ]]; then
        compopt +o default 2>/dev/null
    fi
    return 0
}

complete -o default -F _blobctl_completion blobctl
